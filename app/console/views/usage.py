"""Usage: requests, tokens or credits per day, grouped by model, bot or key, as a chart
(server-rendered SVG), a table to match and a CSV download of the same figures."""
import csv
import io
from datetime import datetime, timedelta

from flask import Response, request

from app import clock
from app.console import bp, charts
from app.console.views.common import page
from app.errors import ApiError, BadRequest
from app.metering import usage
from app.services import bots, keys

GROUPS = {"model": "model", "bot": "bot", "key": "key"}
METRICS = {"calls": "requests", "tokens": "tokens", "credits": "credits"}
MAX_DAYS = 366
TOP_GROUPS = charts.SERIES - 1


def _args():
    """The period, grouping and metric asked for (defaults: the last 14 days, by model, requests).
    Raises BadRequest naming the field."""
    today = clock.now().date()
    start_text = request.args.get("start") or (today - timedelta(days=13)).isoformat()
    end_text = request.args.get("end") or today.isoformat()
    start = clock.parse_time(start_text, "start")
    end = clock.parse_time(end_text, "end")
    if len(start_text) != 10 or len(end_text) != 10:
        raise BadRequest("dates are YYYY-MM-DD", fields={"start" if len(start_text) != 10 else "end": "YYYY-MM-DD"})
    if end < start:
        raise BadRequest("the end is before the start", fields={"end": "before the start"})
    if (end - start).days >= MAX_DAYS:
        raise BadRequest(f"at most {MAX_DAYS} days at once", fields={"start": f"at most {MAX_DAYS} days"})
    group_by = request.args.get("group_by") or "model"
    metric = request.args.get("metric") or "calls"
    if group_by not in GROUPS:
        raise BadRequest("group by model, bot or key", fields={"group_by": "model, bot or key"})
    if metric not in METRICS:
        raise BadRequest("show requests, tokens or credits", fields={"metric": "calls, tokens or credits"})
    return {"start": start, "end": end, "start_text": start_text, "end_text": end_text, "group_by": group_by,
            "metric": metric}


def _value(row, metric):
    return row["prompt_tokens"] + row["completion_tokens"] if metric == "tokens" else row[metric]


def _labels(group_by):
    if group_by == "bot":
        return {b.id: b.name for b in bots.all_bots()}
    if group_by == "key":
        return {k.id: k.name or f"{k.prefix}…{k.last4}" for k in keys.all_keys()}
    return {}


def figures(args):
    """The report for ``args`` with per-day rows filled in for every day of the period."""
    report = usage.report(start=args["start"], end=args["end"] + timedelta(days=1), group_by=args["group_by"],
                          interval="day")
    labels = _labels(args["group_by"])
    name = {None: "(none)"}

    def label(group):
        return name.get(group) or labels.get(group) or (f"deleted {args['group_by']} {group[:8]}"
                                                        if args["group_by"] != "model" else group)

    days = []
    day = args["start"]
    while day <= args["end"]:
        days.append(day.strftime("%Y-%m-%d"))
        day += timedelta(days=1)
    series = [dict(row, day=row["bucket"][:10], label=label(row["group"])) for row in report.get("series", [])]
    groups = sorted(report.get("groups", []), key=lambda g: -_value(g, args["metric"]))
    for g in groups:
        g["label"] = label(g["group"])
    return report, days, series, groups


@bp.get("/usage")
def usage_page():
    try:
        args = _args()
    except ApiError as exc:
        today = clock.now().date()
        fallback = {"start": datetime.combine(today - timedelta(days=13), datetime.min.time()),
                    "end": datetime.combine(today, datetime.min.time()), "group_by": "model", "metric": "calls"}
        values = {k: request.args.get(k, "") for k in ("start", "end", "group_by", "metric")}
        return page("console/usage.html", status=400, values=values, errors=exc.fields, form_error=exc.message,
                    **_context(fallback))
    values = {"start": args["start_text"], "end": args["end_text"], "group_by": args["group_by"],
              "metric": args["metric"]}
    return page("console/usage.html", values=values, **_context(args))


def _context(args):
    report, days, series, groups = figures(args)
    metric = args["metric"]
    shown = [g["label"] for g in groups[:TOP_GROUPS]]
    values = {}
    for row in series:
        key = (row["day"], row["label"] if row["label"] in shown else "other")
        values[key] = values.get(key, 0) + _value(row, metric)
    legend = shown + (["other"] if len(groups) > TOP_GROUPS else [])
    table = {(row["day"], row["label"]): row for row in series}
    return {"report": report, "chart": charts.stacked_bars(days, legend, values), "legend": legend, "days": days,
            "groups": groups, "table": table, "metric": metric, "metric_name": METRICS[metric],
            "group_options": [(k, v) for k, v in GROUPS.items()], "metric_options": list(METRICS.items()),
            "total": sum(_value(g, metric) for g in groups) if groups else _value(report["totals"], metric)}


@bp.get("/usage.csv")
def usage_csv():
    """The page's figures as CSV: one line per day and group."""
    args = _args()
    _, _, series, _ = figures(args)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["day", args["group_by"], f"{args['group_by']}_id", "requests", "prompt_tokens",
                     "completion_tokens", "credits", "errors"])
    for row in series:
        writer.writerow([row["day"], row["label"], row["group"] or "", row["calls"], row["prompt_tokens"],
                         row["completion_tokens"], row["credits"], row["errors"]])
    filename = f"chatport-usage-{args['start_text']}-{args['end_text']}-by-{args['group_by']}.csv"
    return Response(out.getvalue(), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})
