"""``python -m app`` and the one-file binary's entry point: the ``chatport`` command.

The hidden ``_gunicorn`` command (what ``chatport serve`` execs) is dispatched before the CLI is
imported, so the gunicorn master loads nothing of the app (see app/serve.py).
"""
import sys


def main():
    from app import serve

    if sys.argv[1:2] == [serve.COMMAND]:
        serve.run(sys.argv[2:])
        return
    from app.cli import main as cli_main

    cli_main(prog_name="chatport")


if __name__ == "__main__":
    main()
