"""The example DAGs, shipped with the package for those who installed the wheel: copies of the source tree's
``example_dags/`` (a test keeps them equal). Copy one into your DAGs folder; importing this package runs none."""
