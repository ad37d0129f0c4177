"""The connection form as this Airflow's own api-server serves it (``GET /ui/connections/hook_meta``) and its
Test button (``POST /api/v2/connections/test``), through the real FastAPI app in a process of its own.

``make test`` runs this file on Airflow 3.3 (which builds the form from the provider info's ``conn-fields``)
and on 3.1 (which builds it from ``DLIHook.get_connection_form_widgets``): both must show the same form.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from airflow import __version__ as airflow_version

from airflow_provider_dli import AUTH_TYPE_LABELS, CONN_FIELDS
from airflow_provider_dli.emulator import DLIEmulator
from tests.airflow_cli import AirflowHome
from tests.conftest import MakeHook

RELEASES_WITH_THE_PORT_BUG = ("3.3.2",)
"""Where the Test button sends an empty port as 0 and the api-server refuses the test (apache/airflow#73298)."""

API_SERVER = """
import json, sys
from fastapi.testclient import TestClient
from airflow.api_fastapi.app import create_app, get_auth_manager
from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
try:
    from airflow.sdk._shared.secrets_masker import should_hide_value_for_key
except ImportError:
    from airflow.sdk.execution_time.secrets_masker import should_hide_value_for_key

app = create_app()
token = get_auth_manager().generate_jwt(SimpleAuthManagerUser(username="admin", role="admin"))
client = TestClient(app, headers={"Authorization": f"Bearer {token}"})
meta = client.get("/ui/connections/hook_meta")
assert meta.status_code == 200, meta.text
[dli] = [hook for hook in meta.json() if hook["connection_type"] == "dli"]
saved_by_form = {name: field["value"] for name, field in dli["extra_fields"].items()}
tests = []
for form in json.loads(sys.argv[1]):
    # What the UI posts: the standard fields, and every extra field's value (null when left empty).
    form["extra"] = json.dumps({**saved_by_form, **form["extra"]})
    answer = client.post("/api/v2/connections/test", json=form)
    tests.append([answer.status_code, answer.json(), form["extra"]])
masked = sorted(name for name in dli["extra_fields"] if should_hide_value_for_key(name))
# The Test button of the connection list: a saved connection as the list shows it, with its port sent as
# Number(port), which makes an empty port 0.
buttons = {}
for saved in json.loads(sys.argv[2]):
    created = client.post("/api/v2/connections", json=saved)
    assert created.status_code == 201, created.text
    shown = client.get(f"/api/v2/connections/{saved['connection_id']}").json()
    fields = ("conn_type", "connection_id", "description", "host", "login", "password", "schema")
    button = {key: shown[key] or "" for key in fields}
    button.update(extra=shown["extra"] or "{}", port=int(shown["port"] or 0))
    answer = client.post("/api/v2/connections/test", json=button)
    buttons[saved["connection_id"]] = [answer.status_code, answer.json()]
providers = client.get("/api/v2/providers").json()["providers"]
[provider] = [p for p in providers if p["package_name"] == "airflow-provider-dli"]
print(json.dumps({"hook_meta": dli, "tests": tests, "masked": masked, "buttons": buttons, "provider": provider}))
"""


def api_server(
    home: AirflowHome, tmp_path: Path, forms: list[dict[str, Any]], saved: list[dict[str, Any]]
) -> dict[str, Any]:
    env = home.env(tmp_path, None, AIRFLOW__CORE__TEST_CONNECTION="Enabled")
    result = subprocess.run(
        [sys.executable, "-c", API_SERVER, json.dumps(forms), json.dumps(saved)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    answer: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return answer


@pytest.fixture(scope="module")
def emulator() -> Any:
    with DLIEmulator(starting_seconds=600, running_seconds=600) as dli:
        yield dli


@pytest.fixture(scope="module")
def form(airflow_home: AirflowHome, tmp_path_factory: pytest.TempPathFactory, emulator: DLIEmulator) -> dict[str, Any]:
    """One api-server process: the form, and the Test button on two forms that were never saved."""
    connection = emulator.connection()
    filled_in = {
        "connection_id": "my_new_dli",
        "conn_type": "dli",
        "host": connection["host"],
        "login": connection["login"],
        "password": connection["password"],
        "extra": {"project_id": connection["extra"]["project_id"]},
    }
    project_forgotten = {**filled_in, "connection_id": "my_other_dli", "extra": {}}
    # Saved as the form saves them: no port (the field is hidden), or the port 0 that the README suggests.
    saved = {**filled_in, "connection_id": "saved_dli", "extra": json.dumps(connection["extra"])}
    saved_with_port_0 = {**saved, "connection_id": "saved_dli_port_0", "port": 0}
    return api_server(
        airflow_home, tmp_path_factory.mktemp("dags"), [filled_in, project_forgotten], [saved, saved_with_port_0]
    )


def test_every_dli_field_is_on_the_form(form: dict[str, Any]) -> None:
    meta = form["hook_meta"]
    assert meta["hook_class_name"] == "airflow_provider_dli.hooks.dli.DLIHook"
    fields = meta["extra_fields"]
    assert list(fields) == list(CONN_FIELDS), "Airflow 3.1 showed no extra fields at all (extra_fields: null)"
    for name, definition in CONN_FIELDS.items():
        assert fields[name]["schema"]["title"] == definition["label"], name
        assert fields[name]["description"] == definition["description"], name
    standard = meta["standard_fields"]
    assert standard["port"]["hidden"]
    assert standard["url_schema"]["hidden"]
    assert standard["host"]["title"] == "DLI endpoint URL (optional)"
    assert standard["host"]["placeholder"].startswith("from the region")


def test_fields_carry_their_hints_in_the_schema(form: dict[str, Any]) -> None:
    """The UI shows no placeholder for an extra field; ``examples`` become suggestions under the input."""
    fields = form["hook_meta"]["extra_fields"]
    assert "eu-de" in fields["region"]["schema"]["examples"]
    assert "ap-southeast-1" in fields["region"]["schema"]["examples"]
    assert fields["iam_endpoint"]["schema"]["examples"][0].startswith("https://iam.")


def test_no_choice_offers_null(form: dict[str, Any]) -> None:
    """A null among a dropdown's choices shows as "null"; an empty field is null already."""
    for name, field in form["hook_meta"]["extra_fields"].items():
        choices = field["schema"].get("enum")
        if choices:
            assert None not in choices, name
            assert set(field["schema"]["values_display"]) == set(choices), name


def test_auth_type_offers_three_labelled_choices_and_no_null(form: dict[str, Any]) -> None:
    auth_type = form["hook_meta"]["extra_fields"]["auth_type"]
    assert auth_type["schema"]["enum"] == ["aksk", "password", "token"]
    assert auth_type["schema"]["values_display"] == AUTH_TYPE_LABELS
    assert auth_type["value"] == "aksk"


def test_secret_fields_are_password_inputs_and_masked(form: dict[str, Any]) -> None:
    fields = form["hook_meta"]["extra_fields"]
    password_inputs = {name for name, field in fields.items() if field["schema"].get("format") == "password"}
    assert password_inputs == {"security_token", "token"}
    assert password_inputs <= set(form["masked"])
    # Airflow masks any extra whose name says "token": a default there would reach the form as "***".
    assert [name for name, field in fields.items() if field["value"] == "***"] == []


def test_a_connection_as_the_form_saves_it_works(form: dict[str, Any], emulator: DLIEmulator) -> None:
    """The form writes every extra, ``null`` for the ones left empty: the hook reads null as unset."""
    status, answer, extra = form["tests"][0]
    assert json.loads(extra)["region"] is None
    assert status == 200
    assert answer == {"status": True, "message": f"Connected to DLI project {emulator.project_id}"}


def test_test_button_on_an_unsaved_form_says_this_connection(form: dict[str, Any]) -> None:
    """The Test button tests the form under a random id: an error must not name a connection nobody made."""
    status, answer, _ = form["tests"][1]
    assert status == 200
    assert answer["status"] is False
    assert "set the extra 'project_id' of this connection" in answer["message"]
    assert "connection '" not in answer["message"]


def test_test_connection_names_a_saved_connection(make_hook: MakeHook, emulator: DLIEmulator) -> None:
    """``airflow connections test my_dli`` tests a connection by its real id: the error names it."""
    connection = emulator.connection()
    del connection["extra"]["project_id"]
    hook = make_hook(connection)
    ok, message = hook.test_connection()
    assert not ok
    assert f"of connection {hook.dli_conn_id!r}" in message


def test_test_button_of_a_saved_connection(form: dict[str, Any], emulator: DLIEmulator) -> None:
    """As the README says: on Airflow 3.3.2 the button fails for a saved connection without a port (its UI sends
    0, apache/airflow#73298), and works with the port 0; elsewhere it works either way."""
    connected = [200, {"status": True, "message": f"Connected to DLI project {emulator.project_id}"}]
    assert form["buttons"]["saved_dli_port_0"] == connected
    if airflow_version in RELEASES_WITH_THE_PORT_BUG:
        status, answer = form["buttons"]["saved_dli"]
        assert status == 400
        assert answer["detail"].startswith("The host or port to test differs from the stored connection")
    else:
        assert form["buttons"]["saved_dli"] == connected


def test_providers_page_shows_the_description_with_its_spaces(form: dict[str, Any]) -> None:
    """The Providers page shows the description as Airflow's UI renders it: split at spaces, each word that is
    a URL as a link without the space after it, every other word with one. A word after a link would stick."""
    description = form["provider"]["description"]
    words = re.sub(r"\n(?:and)?", " ", description).split(" ")
    links = set(re.findall(r"https?://[\w.-]+(?:\.?:[\w.-]+)*(?:[#/?][\w!#$%&'()*+,./:;=?@\[\]~-]*)?", description))
    shown = "".join(word if word in links else f"{word} " for word in words)
    assert links
    assert shown.rstrip() == " ".join(words), shown
