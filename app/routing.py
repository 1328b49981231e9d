"""URL rules whose URL builders are compiled when first used.

werkzeug compiles two Python functions per rule when the rule is added to the app (to build the
rule's URL, ``url_for``): for chatport's 127 rules that was two thirds of creating the app
(0.2 s of 0.3 s), paid by every worker start, CLI command and test, while a worker builds the
URLs of a handful of rules (the console's). Matching requests does not use them.
``LazyBuildRule`` compiles a rule's builder the first time it builds that rule's URL, then
keeps it: the same function werkzeug would have made, made later.
"""
from werkzeug.routing import Rule


class LazyBuildRule(Rule):
    def _compile_builder(self, append_unknown=True):
        name = "_build_unknown" if append_unknown else "_build"

        def build(rule, *args, **kwargs):  # bound to the rule by Rule.compile
            compiled = Rule._compile_builder(rule, append_unknown).__get__(rule, None)
            setattr(rule, name, compiled)  # later calls go straight to it
            return compiled(*args, **kwargs)
        return build
