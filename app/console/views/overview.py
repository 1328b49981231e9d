"""Overview: requests, tokens, credits and errors today and this month; the busiest bots and models."""
from datetime import datetime, timedelta

from app import clock
from app.console import bp
from app.console.views.common import page
from app.metering import limits, usage
from app.services import bots


def _busiest(report, names=None, top=5):
    groups = sorted(report.get("groups", []), key=lambda g: (-g["calls"], str(g["group"])))
    return [dict(g, label=(names or {}).get(g["group"], g["group"]) or "—") for g in groups if g["group"]][:top]


@bp.get("/")
def overview():
    now = clock.now()
    today = datetime(now.year, now.month, now.day)
    end = now + timedelta(seconds=1)
    month = limits.month_start(now)
    by_bot = usage.report(start=month, end=end, group_by="bot")
    by_model = usage.report(start=month, end=end, group_by="model")
    names = {b.id: b.name for b in bots.all_bots()}
    return page("console/overview.html",
                today=usage.report(start=today, end=end)["totals"], month=by_bot["totals"],
                busiest_bots=_busiest(by_bot, names), busiest_models=_busiest(by_model),
                bot_count=len(names))
