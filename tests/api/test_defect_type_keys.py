"""#19 item 1: every defect type keeps its labelling key; a new type takes the lowest free key
and the mapping is the same on every page and after a reload; creating a type is its own
audited, undoable action."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from inspection.api.server import RunningServer
from tests.api.browser import login, wait_for
from tests.api.conftest import count

LEGEND = """() => {
  const cells = [...document.querySelectorAll('#key-legend > kbd')];
  return Object.fromEntries(cells.filter(k => /^[1-9]$/.test(k.textContent))
    .map(k => [k.textContent, k.nextElementSibling.textContent]));
}"""


def _keys(client: TestClient, headers: dict[str, str]) -> dict[str, int | None]:
    return {t["name"]: t["key"] for t in client.get("/api/defect-types", headers=headers).json()}


def test_creating_a_type_keeps_the_others_keys_and_is_undoable(
    client: TestClient, auth: dict[str, dict[str, str]], session: Session
) -> None:
    operator = auth["operator"]
    before = _keys(client, operator)
    assert sorted(k for k in before.values() if k) == list(range(1, len(before) + 1))
    created = client.post("/api/defect-types", json={"name": "Aaa-burr"}, headers=operator)
    assert created.status_code == 201, created.text
    assert created.json()["name"] == "aaa-burr"
    assert created.json()["key"] == len(before) + 1
    after = _keys(client, operator)
    assert {n: k for n, k in after.items() if n != "aaa-burr"} == before
    again = client.post("/api/defect-types", json={"name": "aaa-burr"}, headers=operator)
    assert again.status_code == 409
    audit = "SELECT count(*) FROM audit_log WHERE action = :action"
    assert count(session, audit, action="defect_type.create") == 1

    undone = client.delete(f"/api/defect-types/{created.json()['id']}", headers=operator)
    assert undone.status_code == 200
    assert _keys(client, operator) == before
    assert count(session, audit, action="defect_type.delete") == 1

    label = client.post(
        "/api/inspections/1/labels",
        json={"verdict": "fail", "defect_type": "zz-scratch"},
        headers=operator,
    )
    assert label.status_code == 201
    assert count(session, audit, action="defect_type.create") == 2  # its own audit entry
    in_use = _keys(client, operator)
    assert in_use["zz-scratch"] == len(before) + 1
    scratch_id = next(
        t["id"]
        for t in client.get("/api/defect-types", headers=operator).json()
        if t["name"] == "zz-scratch"
    )
    refused = client.delete(f"/api/defect-types/{scratch_id}", headers=operator)
    assert refused.status_code == 409


def test_key_mapping_survives_a_new_type_and_reloads(page: Any, server: RunningServer) -> None:
    login(page, server.url, "operator")
    page.goto(f"{server.url}/review")
    page.wait_for_selector("#key-legend kbd")
    before = page.evaluate(LEGEND)
    assert before and "1" in before
    page.keyboard.press("n")
    page.wait_for_selector("#newtype-name:focus")
    page.keyboard.type("Aaa-burr")  # first in name order: with name-ordered keys it took key 1
    page.keyboard.press("Enter")
    wait_for(page, "() => document.getElementById('review').dataset.pending === '0'")
    created = page.evaluate(LEGEND)
    new_key = str(len(before) + 1)
    assert created == {**before, new_key: "aaa-burr"}
    page.reload()
    page.wait_for_selector("#key-legend kbd")
    assert page.evaluate(LEGEND) == created
    page.goto(f"{server.url}/inspections/1")
    page.wait_for_selector("#key-legend kbd")
    assert page.evaluate(LEGEND) == created
