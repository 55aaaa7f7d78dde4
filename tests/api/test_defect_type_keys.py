"""#19 item 1: every defect type keeps its labelling key at each station (each station has its
own mapping); a new type takes the lowest free key at the station where it is named, and the
mapping is the same on every page and after a reload; the legend follows the shown item's
station; creating a type is its own audited, undoable action, undone in the UI where it was
created.

The browser test runs at the four viewports on one app for the module: each case creates the
type, checks the mapping, and undoes the creation in the UI, so the next starts as it did."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.orm import Session

from inspection.api.server import RunningServer
from tests.api.browser import wait_for
from tests.api.conftest import count

#: The key legend as {key: type name} (the name is the text before any button in its cell).
LEGEND = """() => {
  const cells = [...document.querySelectorAll('#key-legend > kbd')];
  return Object.fromEntries(cells.filter(k => /^[1-9]$/.test(k.textContent))
    .map(k => [k.textContent, k.nextElementSibling.firstChild.textContent.trim()]));
}"""


def _keys(client: TestClient, headers: dict[str, str], station: int) -> dict[str, int | None]:
    """The mapping at one station: {type name: key}."""
    url = f"/api/defect-types?station_id={station}"
    return {t["name"]: t["key"] for t in client.get(url, headers=headers).json()}


def _station_of(client: TestClient, headers: dict[str, str], inspection_id: int) -> int:
    return int(
        client.get(f"/api/inspections/{inspection_id}", headers=headers).json()["station_id"]
    )


def test_creating_a_type_keeps_the_others_keys_and_is_undoable(
    client: TestClient, auth: dict[str, dict[str, str]], session: Session
) -> None:
    operator = auth["operator"]
    before = _keys(client, operator, 1)
    assert sorted(k for k in before.values() if k) == list(range(1, len(before) + 1))
    created = client.post(
        "/api/defect-types", json={"name": "Aaa-burr", "station_id": 1}, headers=operator
    )
    assert created.status_code == 201, created.text
    assert created.json()["name"] == "aaa-burr"
    assert created.json()["key"] == len(before) + 1
    after = _keys(client, operator, 1)
    assert {n: k for n, k in after.items() if n != "aaa-burr"} == before
    again = client.post("/api/defect-types", json={"name": "aaa-burr"}, headers=operator)
    assert again.status_code == 409
    audit = "SELECT count(*) FROM audit_log WHERE action = :action"
    assert count(session, audit, action="defect_type.create") == 1

    undone = client.delete(f"/api/defect-types/{created.json()['id']}", headers=operator)
    assert undone.status_code == 200
    assert _keys(client, operator, 1) == before
    assert count(session, audit, action="defect_type.delete") == 1

    label = client.post(
        "/api/inspections/1/labels",
        json={"verdict": "fail", "defect_type": "zz-scratch"},
        headers=operator,
    )
    assert label.status_code == 201
    assert count(session, audit, action="defect_type.create") == 2  # its own audit entry
    station = _station_of(client, operator, 1)
    in_use = _keys(client, operator, station)
    assert in_use["zz-scratch"] == len(before) + 1
    scratch_id = next(
        t["id"]
        for t in client.get("/api/defect-types", headers=operator).json()
        if t["name"] == "zz-scratch"
    )
    refused = client.delete(f"/api/defect-types/{scratch_id}", headers=operator)
    assert refused.status_code == 409


def test_each_station_has_its_own_keys(
    client: TestClient, auth: dict[str, dict[str, str]], session: Session
) -> None:
    """A type takes the next free key at the station where it is named; other stations keep
    their keys free until they first label with it, then it takes their next free key."""
    operator = auth["operator"]
    a, b = 1, 2
    seeded = _keys(client, operator, a)
    assert _keys(client, operator, b) == seeded  # both start with the plant's types
    only_b = client.post(
        "/api/defect-types", json={"name": "thread-damage", "station_id": b}, headers=operator
    ).json()
    assert only_b["key"] == len(seeded) + 1 and only_b["keys"] == {str(b): len(seeded) + 1}
    at_a = client.post(
        "/api/defect-types", json={"name": "burr", "station_id": a}, headers=operator
    ).json()
    assert at_a["key"] == len(seeded) + 1  # the same key number, at another station
    assert _keys(client, operator, a) == {**seeded, "burr": len(seeded) + 1, "thread-damage": None}
    assert _keys(client, operator, b) == {**seeded, "thread-damage": len(seeded) + 1, "burr": None}

    # station b's first label with "burr" gives it b's next free key; nothing else moves
    item_b = session.execute(
        text("SELECT id FROM inspection WHERE station_id = :s LIMIT 1"), {"s": b}
    ).scalar_one()
    labelled = client.post(
        f"/api/inspections/{item_b}/labels",
        json={"verdict": "fail", "defect_type": "burr"},
        headers=operator,
    )
    assert labelled.status_code == 201
    assert _keys(client, operator, b) == {
        **seeded,
        "thread-damage": len(seeded) + 1,
        "burr": len(seeded) + 2,
    }
    assert _keys(client, operator, a)["burr"] == len(seeded) + 1
    assert (
        client.post(
            "/api/defect-types", json={"name": "x", "station_id": 999}, headers=operator
        ).status_code
        == 404
    )


ITEMS = (
    "() => JSON.parse(document.getElementById('page-data').textContent)"
    ".items.map(i => [i.id, i.station_id, i.station])"
)


@pytest.mark.browser
@pytest.mark.slow
def test_key_mapping_per_station_survives_a_new_type_and_reloads_and_the_ui_undoes_it(
    tab: Any, shared_server: RunningServer, shared_session: Session
) -> None:
    base = shared_server.url
    page = tab("operator")
    page.goto(f"{base}/review")
    page.wait_for_selector("#key-legend kbd")
    items = page.evaluate(ITEMS)
    _, station, station_name = items[0]
    elsewhere = next(i for i in items if i[1] != station)  # an item of another station

    page.goto(f"{base}/review?station_id={station}")
    page.wait_for_selector("#key-legend kbd")
    assert page.text_content("#key-station") == station_name
    before = page.evaluate(LEGEND)
    assert before and "1" in before
    labelled = int(page.get_attribute("#review", "data-current-id") or 0)
    audit = "SELECT count(*) FROM audit_log WHERE action = :action"
    created_before = count(shared_session, audit, action="defect_type.create")
    deleted_before = count(shared_session, audit, action="defect_type.delete")
    page.keyboard.press("n")
    page.wait_for_selector("#newtype-name:focus")
    page.keyboard.type("Aaa-burr")  # first in name order: with name-ordered keys it took key 1
    page.keyboard.press("Enter")
    wait_for(page, "() => document.getElementById('review').dataset.pending === '0'")
    created = page.evaluate(LEGEND)
    new_key = str(len(before) + 1)
    assert created == {**before, new_key: "aaa-burr"}
    assert count(shared_session, audit, action="defect_type.create") == created_before + 1

    # the same mapping after a reload (a second tab: the first keeps its undo) and elsewhere
    other = tab("operator")
    other.goto(f"{base}/review?station_id={station}")
    other.wait_for_selector("#key-legend kbd")
    assert other.evaluate(LEGEND) == created
    other.goto(f"{base}/inspections/{labelled}")
    other.wait_for_selector("#key-legend kbd")
    assert other.evaluate(LEGEND) == created
    assert other.locator("#key-legend .undo-type").count() == 0  # only where it was created
    # another station's mapping is its own: the new type took none of its keys
    other.goto(f"{base}/inspections/{elsewhere[0]}")
    other.wait_for_selector("#key-legend kbd")
    assert other.text_content("#key-station") == elsewhere[2]
    assert "aaa-burr" not in other.evaluate(LEGEND).values()
    elsewhere_keys = other.evaluate(LEGEND)
    # in a queue of all stations the legend follows the shown item's station
    other.goto(f"{base}/review")
    other.wait_for_selector("#key-legend kbd")
    shown = other.evaluate(ITEMS)
    for item_id, item_station, name in (
        next(i for i in shown if i[1] == elsewhere[1]),
        next(i for i in shown if i[1] == station),
    ):
        other.click(f"#q-{item_id}")
        assert other.text_content("#key-station") == name
        assert other.evaluate(LEGEND) == (created if item_station == station else elsewhere_keys)

    # undo where it was created: the label (u), then the type's creation (its button)
    page.keyboard.press("u")
    wait_for(page, "() => document.getElementById('review').dataset.pending === '0'")
    page.get_by_role("button", name="Undo new type aaa-burr").click()
    wait_for(page, "() => document.getElementById('review').dataset.pending === '0'")
    wait_for(page, "() => !document.getElementById('key-legend').textContent.includes('aaa')")
    assert page.evaluate(LEGEND) == before
    assert count(shared_session, audit, action="defect_type.delete") == deleted_before + 1
    other.goto(f"{base}/review?station_id={station}")
    other.wait_for_selector("#key-legend kbd")
    assert other.evaluate(LEGEND) == before  # as the case began: the next viewport starts so
