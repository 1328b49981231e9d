"""Cursor pagination: no item skipped or repeated while rows are inserted between pages."""
from .test_mgmt_api import assert_error


def _walk(api, path, limit, insert=None):
    seen, cursor, pages = [], None, 0
    while True:
        url = f"{path}?limit={limit}" + (f"&cursor={cursor}" if cursor else "")
        body = api.get(url).get_json()
        seen.extend(item["id"] for item in body["data"])
        pages += 1
        if insert:
            insert(pages)
        if not body["data"]:
            return seen, body
        cursor = body["pagination"]["last"]
        assert cursor == body["data"][-1]["id"]


def test_bots_no_skip_no_repeat_with_inserts(admin):
    ids = [admin.post("/api/v1/bots", json={"name": f"bot{i}"}).get_json()["id"] for i in range(23)]
    inserted = []

    def insert(page):
        if page <= 3:
            inserted.append(admin.post("/api/v1/bots", json={"name": f"late{page}"}).get_json()["id"])

    seen, last = _walk(admin, "/api/v1/bots", 5, insert)
    assert len(seen) == len(set(seen))
    assert seen == ids + inserted  # every item once, in creation order; late rows at the end
    assert last["pagination"]["total"] == len(ids) + len(inserted)


def test_users_pages(admin):
    ids = [admin.post("/api/v1/users", json={"external_id": f"u{i}"}).get_json()["id"] for i in range(12)]
    first = admin.get("/api/v1/users?limit=10").get_json()
    assert first["pagination"] == {"total": 12, "last": ids[9]}
    second = admin.get(f"/api/v1/users?limit=10&cursor={ids[9]}").get_json()
    assert [u["id"] for u in second["data"]] == ids[10:]
    assert admin.get("/api/v1/users").get_json()["pagination"]["last"] == ids[9]  # default 10


def test_limit_bounds_and_bad_cursor(admin):
    admin.post("/api/v1/bots", json={"name": "a"})
    for bad in ("0", "101", "-1", "ten"):
        assert_error(admin.get(f"/api/v1/bots?limit={bad}"), 400, "limit")
    assert admin.get("/api/v1/bots?limit=100").status_code == 200
    assert admin.get("/api/v1/bots?limit=1").status_code == 200
    assert_error(admin.get("/api/v1/bots?cursor=does-not-exist"), 400, "cursor")
