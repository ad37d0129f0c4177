"""Cancel one DLI batch job by id: a manual "kill" button in the Airflow UI.

Trigger it with the id in the run's conf, e.g. ``airflow dags test example_dli_cancel_batch -c
'{"batch_id": "0a324461-d9d9-45da-a52a-3b3c7a3d809e"}'``, or fill in the form in the UI. Cancelling a job
that already finished is not an error: the task returns ``cancelled: false`` and the job's state.
"""

from __future__ import annotations

from airflow.sdk import DAG, Param

from airflow_provider_dli.operators.dli import DLICancelBatchOperator

UUID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"

with DAG(
    dag_id="example_dli_cancel_batch",
    schedule=None,
    catchup=False,
    params={
        # The lengths too: Param checks the pattern with re.search, where "$" also matches before a newline.
        "batch_id": Param(
            type="string", pattern=UUID_PATTERN, minLength=36, maxLength=36, description="The DLI batch job to cancel"
        )
    },
    tags=["example", "dli"],
):
    DLICancelBatchOperator(
        task_id="cancel_batch_job",
        batch_id="{{ params.batch_id }}",
        wait_for_termination=True,
        poll_interval=1,
        termination_timeout=120,
    )
