"""The connection form and its Test button in a real browser (headless Chromium driven by Selenium), against
this Airflow's own api-server and UI, as a person uses them.

Opt-in (``DLI_BROWSER_TESTS=1``): it needs Chromium and its driver from the system's packages (Debian:
``apt-get install chromium chromium-driver``) and ``pip install selenium``, which ``make install`` does not
provide, and a browser on a loaded 2-core CI machine adds a minute of start-up and its own timing to the
suite. What it checks is also checked without a browser, through the same REST calls the UI makes
(tests/test_connection_form.py); this test proves that those are the calls the UI makes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from airflow import __version__ as airflow_version

from airflow_provider_dli.emulator import DLIEmulator
from tests.e2e.deployment import AIRFLOW, START_TIMEOUT, Deployment, wait_for
from tests.test_connection_form import RELEASES_WITH_THE_PORT_BUG

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    os.environ.get("DLI_BROWSER_TESTS") != "1" or not CHROMIUM or not DRIVER,
    reason="a real-browser test: set DLI_BROWSER_TESTS=1, with chromium, chromium-driver and selenium installed",
)
SECRET_FIELDS = ("security_token", "token")


@pytest.fixture(scope="module")
def api_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Deployment, DLIEmulator]]:
    """The api-server alone (the form needs nothing else), with two saved DLI connections: one as the form
    saves it (no port), one with the port 0."""
    home = tmp_path_factory.mktemp("browser-airflow")
    with DLIEmulator(running_seconds=600) as emulator:
        airflow = Deployment(home, home, emulator, extra_config={"CORE__TEST_CONNECTION": "Enabled"})
        subprocess.run([AIRFLOW, "db", "migrate"], env=airflow.env(), capture_output=True, timeout=600, check=True)
        airflow.start_component("api-server", "api-server")
        try:
            wait_for(lambda: healthy(airflow.url), "the api-server", START_TIMEOUT, interval=1.0)
            token = requests.get(f"{airflow.url}/auth/token", timeout=30).json()["access_token"]
            connection = emulator.connection()
            saved = {
                "conn_type": "dli",
                "host": connection["host"],
                "login": connection["login"],
                "password": connection["password"],
                "extra": json.dumps(connection["extra"]),
            }
            for body in ({**saved, "connection_id": "a_no_port"}, {**saved, "connection_id": "b_port_0", "port": 0}):
                created = requests.post(
                    f"{airflow.url}/api/v2/connections",
                    json=body,
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=30,
                )
                assert created.status_code == 201, created.text
            yield airflow, emulator
        finally:
            airflow.stop()


def healthy(url: str) -> bool:
    try:
        return requests.get(f"{url}/api/v2/monitor/health", timeout=5).ok
    except requests.ConnectionError:
        return False


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(argument)
    options.binary_location = CHROMIUM
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


def open_connections(browser: Any, url: str) -> None:
    """Admin > Connections. Airflow 3.1's UI logs the browser in on its home page and forgets any other path, so
    the home page comes first."""
    from selenium.webdriver.common.by import By

    browser.get(f"{url}/")
    first(browser, By.XPATH, "//*[text()='Admin']", "the home page")
    browser.get(f"{url}/connections")


def first(browser: Any, by: str, value: str, what: str) -> Any:
    """The first element that matches, once the page shows one."""
    return wait_for(lambda: browser.find_elements(by, value), what)[0]


def text_of(browser: Any, by: str, value: str) -> str:
    """The text of what matches now; an element that left the page meanwhile counts as none."""
    from selenium.common.exceptions import StaleElementReferenceException

    try:
        return " ".join(element.text for element in browser.find_elements(by, value)).strip()
    except StaleElementReferenceException:
        return ""


def click(browser: Any, by: str, value: str, what: str, index: int = 0) -> None:
    """Click the element once the page shows it; the UI re-renders as its data arrives, which can replace the
    element between finding and clicking it: then it is found again."""
    from selenium.common.exceptions import StaleElementReferenceException

    def clicked() -> bool:
        elements = browser.find_elements(by, value)
        if len(elements) <= index:
            return False
        try:
            elements[index].click()
        except StaleElementReferenceException:
            return False
        return True

    wait_for(clicked, what)


def press_test(browser: Any, url: str, row: int) -> tuple[str, dict[str, Any]]:
    """Press the Test button of the connection list's row; the toast's text and the body the UI posted."""
    from selenium.webdriver.common.by import By

    open_connections(browser, url)
    first(browser, By.CSS_SELECTOR, "button[aria-label='Test Connection']", "the Test buttons")
    browser.get_log("performance")  # forget the page load's requests
    click(browser, By.CSS_SELECTOR, "button[aria-label='Test Connection']", "a Test button", row)
    toast = wait_for(lambda: text_of(browser, By.CSS_SELECTOR, "[data-scope=toast]"), "the Test button's answer")
    posted = [
        json.loads(message["params"]["request"]["postData"])
        for entry in browser.get_log("performance")
        if (message := json.loads(entry["message"])["message"])["method"] == "Network.requestWillBeSent"
        and message["params"]["request"]["url"].endswith("/api/v2/connections/test")
    ]
    assert len(posted) == 1
    return toast, posted[0]


def test_test_button_in_the_browser(api_server: tuple[Deployment, DLIEmulator], browser: Any) -> None:
    airflow, emulator = api_server
    toast, posted = press_test(browser, airflow.url, 0)  # a_no_port
    assert posted["port"] == 0  # the empty port, as the UI sends it
    if airflow_version in RELEASES_WITH_THE_PORT_BUG:
        assert "Failed" in toast
        assert "Bad Request" in toast
    else:
        assert f"Connected to DLI project {emulator.project_id}" in toast
    toast, posted = press_test(browser, airflow.url, 1)  # b_port_0: the README's way round on 3.3.2
    assert f"Connected to DLI project {emulator.project_id}" in toast


def test_secret_extras_in_the_browser(api_server: tuple[Deployment, DLIEmulator], browser: Any) -> None:
    """In the form of a new DLI connection: password inputs on Airflow 3.3; plain text inputs on 3.1, whose
    form has no password input for extra fields (as the README says)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    airflow, _ = api_server
    open_connections(browser, airflow.url)
    click(browser, By.XPATH, "//button[normalize-space()='Add Connection']", "the Add Connection button")
    connection_type = wait_for(
        lambda: browser.find_elements(By.CSS_SELECTOR, "input[role=combobox]"), "the connection type choice"
    )[-1]
    connection_type.click()
    connection_type.send_keys("Data Lake Insight")
    wait_for(lambda: browser.find_elements(By.XPATH, "//*[text()='Data Lake Insight (DLI)']"), "the DLI type")
    connection_type.send_keys(Keys.ENTER)
    click(browser, By.XPATH, "//*[text()='Extra Fields']", "the extra fields")
    inputs = {name: first(browser, By.ID, f"element_{name}", f"the {name} field") for name in SECRET_FIELDS}
    expected = "password" if airflow_version.startswith("3.3") else "text"
    assert {name: field.get_attribute("type") for name, field in inputs.items()} == dict.fromkeys(
        SECRET_FIELDS, expected
    )
