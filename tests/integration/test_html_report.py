"""`report html` (issue 17, part 5): one self-contained page for finance, opened in a real
headless Chromium (Debian's, through its ChromeDriver): it loads with no console errors and
no network, every chart is drawn (its screenshot is not blank), and every number in its
tables is the CLI reports' own for the same range."""

from __future__ import annotations

import csv
import io
import json
import shutil
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from pipeline.money.html_report import TOP_USERS
from pipeline.money.margins import approve, propose
from pipeline.schema import logins
from tests.integration.pipeline_harness import make_event
from tests.integration.test_money import ADMIN, book, new_user, run_cli

pytestmark = pytest.mark.integration

D = Decimal
FIRST = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=4)
CHARTS = ("daily", "models", "tiers", "users", "credits")
BACKGROUND = {(255, 255, 255), (250, 250, 250)}  # the page and the plot area


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):  # never a skip: the page is tested or the run fails
        pytest.fail("chromium and chromedriver must be installed (deploy/toolchain.sh)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    profile = tmp_path_factory.mktemp("chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--window-size=1400,1000",
                 f"--user-data-dir={profile}"):  # fmt: skip
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    chrome = webdriver.Chrome(service=Service(driver), options=options)
    try:
        yield chrome
    finally:
        chrome.quit()


def csv_rows(db: str, *args: str) -> list[list[str]]:
    result = run_cli(db, *args, "--format", "csv")
    assert result.exit_code == 0, result.output
    return list(csv.reader(io.StringIO(result.output)))


def table(browser: webdriver.Chrome, name: str) -> list[list[str]]:
    element = browser.find_element(By.ID, f"table-{name}")
    head = [c.text for c in element.find_elements(By.CSS_SELECTOR, "thead th")]
    body = [
        [c.get_attribute("textContent") or "" for c in row.find_elements(By.TAG_NAME, "td")]
        for row in element.find_elements(By.CSS_SELECTOR, "tbody tr")
    ]
    return [head, *body]


def summed(rows: list[list[str]], keys: list[str], values: list[str]) -> list[list[str]]:
    """The CSV rows' `values` summed per `keys`, as exact decimal text."""
    head, *body = rows
    sums: dict[tuple[str, ...], list[Decimal]] = defaultdict(lambda: [D(0)] * len(values))
    for row in body:
        cells = dict(zip(head, row, strict=True))
        total = sums[tuple(cells[k] for k in keys)]
        for i, name in enumerate(values):
            total[i] += D(cells[name])
    return [[*k, *(str(v) for v in total)] for k, total in sorted(sums.items())]


def test_the_finance_page_renders_every_chart_and_holds_the_reports_figures(
    seeded_db: str, browser: webdriver.Chrome, tmp_path: Path
) -> None:
    db = seeded_db
    with psycopg.connect(db) as conn:  # a monitored target on one model
        openai = conn.execute("SELECT id FROM providers WHERE name = 'OpenAI'").fetchone()[0]
        config, _ = propose(
            conn, "model", D("1.10"), ADMIN, provider_id=openai, model_id="gpt-4-turbo",
            effective_from=FIRST - timedelta(days=30), reason="test", usd_per_credit=D("0.001"),
        )  # fmt: skip
        conn.execute("UPDATE pricing_configs SET target_gross_margin_percent = 20, "
                     "monitored = true WHERE id = %s", (config,))  # fmt: skip
        approve(conn, config, ADMIN)
    users = [new_user(db, credits=5_000_000, expires_at=datetime.now(UTC) + timedelta(days=5))
             for _ in range(3)]  # fmt: skip
    users.append(new_user(db, credits=10))  # spends past zero: overdraft
    events = []
    for day in range(3):
        for k, user in enumerate(users):
            at = FIRST + timedelta(days=day, hours=1 + k)
            events.append(make_event(user, input_tokens=5_000 * (k + 1), output_tokens=900 + day,
                                     started_at=at))  # fmt: skip
            events.append(make_event(user, model="gpt-4-turbo", input_tokens=2_000,
                                     output_tokens=400 * (k + 1), started_at=at))  # fmt: skip
    book(db, *events)

    start, end = FIRST.date().isoformat(), (FIRST + timedelta(days=2)).date().isoformat()
    page = tmp_path / "finance.html"
    with psycopg.connect(db) as conn:  # as finance makes it: its own login
        finance = logins.login_url(conn, db, logins.FINANCE_LOGIN, "finance_reader")
    made = run_cli(finance, "report", "html", "--from", start, "--to", end, "-o", str(page))
    assert made.exit_code == 0, made.output
    text = page.read_text()
    assert "<script src=" not in text  # plotly.js is inline: the page needs no network

    browser.get(page.as_uri())
    WebDriverWait(browser, 30).until(
        lambda b: all(b.find_elements(By.CSS_SELECTOR, f"#chart-{c} .main-svg") for c in CHARTS)
    )
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []
    for name in CHARTS:
        shot = Image.open(
            io.BytesIO(browser.find_element(By.ID, f"chart-{name}").screenshot_as_png)
        )
        pixels = list(shot.convert("RGB").get_flattened_data())
        drawn = sum(1 for p in pixels if p not in BACKGROUND) / len(pixels)
        assert drawn > 0.02, f"chart {name} looks blank ({drawn:.1%} drawn)"

    # Every table is the CLI reports' figures for the same range.
    assert table(browser, "tiers") == csv_rows(db, "report", "margins", "--from", start,
                                               "--to", end, "--by", "tier")  # fmt: skip
    assert table(browser, "models") == csv_rows(db, "report", "margins", "--from", start,
                                                "--to", end, "--by", "model")  # fmt: skip
    by_model = csv_rows(db, "report", "daily", "--from", start, "--to", end, "--by", "model")
    values = ["requests", "vendor_cost_usd", "credit_value_usd", "gross_margin_usd"]
    daily = table(browser, "daily")
    assert daily[0] == ["day", *values]
    assert [[d, *(str(D(v)) for v in rest)] for d, *rest in daily[1:]] == summed(
        by_model, ["day"], values
    )
    assert len(daily) == 4  # three days
    by_user = csv_rows(db, "report", "daily", "--from", start, "--to", end, "--by", "user")
    spent = ["requests", "credits_deducted", "vendor_cost_usd", "gross_margin_usd"]
    top = sorted(summed(by_user, ["user_id"], spent), key=lambda r: (-D(r[2]), r[0]))[:TOP_USERS]
    users_table = table(browser, "users")
    assert [[u, *(str(D(v)) for v in rest)] for u, *rest in users_table[1:]] == top
    assert {r[0] for r in users_table[1:]} == {str(u) for u in users}

    credits = json.loads(run_cli(db, "report", "credits", "--format", "json").output)
    position = {r[0]: r[1:] for r in table(browser, "credits")[1:]}
    assert position["outstanding"][0] == str(credits["outstanding_credits"])
    assert D(position["outstanding"][1]) == D(credits["outstanding_usd"])
    assert position["overdraft"][0] == str(credits["overdraft_credits"]) != "0"
    assert D(position["overdraft"][1]) == D(credits["overdraft_usd"])
    for bucket, amount in credits["by_expiry"].items():
        assert position[f"expiring {bucket}"][0] == str(amount)
    assert int(position["expiring within_7_days"][0]) > 0
    assert "the credit identity reconciles" in text
