"""``python -m airflow_provider_dli``: the ``airflow dli`` commands on Airflow releases that do not add them."""

from airflow_provider_dli.cli import main

if __name__ == "__main__":
    main()
