"""chatport API: usage analytics (calls, tokens, credits) and a key's own usage."""
from marshmallow import Schema, fields, validate

from app import clock
from app.api.common import Blueprint, Timestamp, any_key, current_key
from app.metering import limits, usage
from app.services.keys import require_admin

blp = Blueprint("analytics", __name__, url_prefix="/analytics", description="Usage analytics")
blp.before_request(any_key)


class ReportArgs(Schema):
    start = fields.Str(metadata={"description": "YYYY-MM-DD or ISO 8601 (default: 30 days before end)"})
    end = fields.Str(metadata={"description": "YYYY-MM-DD or ISO 8601, exclusive (default: now)"})
    group_by = fields.Str(validate=validate.OneOf(list(usage.GROUPS)))
    interval = fields.Str(validate=validate.OneOf(["hour", "day"]))


class Totals(Schema):
    calls = fields.Int()
    prompt_tokens = fields.Int()
    completion_tokens = fields.Int()
    credits = fields.Int()
    errors = fields.Int()


class Group(Totals):
    group = fields.Str(allow_none=True)


class Point(Group):
    bucket = fields.Str()


class Report(Schema):
    start = Timestamp()
    end = Timestamp()
    totals = fields.Nested(Totals)
    groups = fields.List(fields.Nested(Group))
    series = fields.List(fields.Nested(Point))


class Mine(Schema):
    key_id = fields.Str()
    month_start = Timestamp()
    credits_used = fields.Int()
    credit_quota = fields.Int(allow_none=True)
    credits_remaining = fields.Int(allow_none=True)
    totals = fields.Nested(Totals)


def _report(args, key_id=None):
    return usage.report(start=clock.parse_time(args.get("start"), "start"),
                        end=clock.parse_time(args.get("end"), "end"),
                        group_by=args.get("group_by"), interval=args.get("interval"), key_id=key_id)


@blp.route("/usage", methods=["GET"])
@blp.arguments(ReportArgs, location="query")
@blp.response(200, Report)
def usage_report(args):
    """Totals, groups (key, bot, automation, model, dialect, category) and an hour/day series (admin)"""
    require_admin(current_key())
    return _report(args)


@blp.route("/me", methods=["GET"])
@blp.arguments(ReportArgs, location="query")
@blp.response(200, Mine)
def my_usage(args):
    """This key's usage this month and the credits it has left"""
    key = current_key()
    since = limits.month_start()
    used = limits.credits_used(key.id, since)
    totals = usage.report(start=since, key_id=key.id)["totals"]
    return {"key_id": key.id, "month_start": since, "credits_used": used, "credit_quota": key.credit_quota,
            "credits_remaining": None if key.credit_quota is None else max(0, key.credit_quota - used),
            "totals": totals}
