"""The ``transferkit`` command line: one module per command, assembled here. Heavy libraries (numpy, torch,
scikit-learn) are imported inside the commands, so ``--help`` starts fast."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

# typer (pinned in pyproject) carries its own click; its usage errors are these classes, not the click package's
from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError

from transferkit import __version__
from transferkit.cli.adapt import adapt
from transferkit.cli.audit import audit
from transferkit.cli.auto import auto
from transferkit.cli.backbones import backbones
from transferkit.cli.cache import cache_app
from transferkit.cli.compare import compare
from transferkit.cli.demo import demo
from transferkit.cli.evaluate import evaluate
from transferkit.cli.export import export
from transferkit.cli.html_report import report
from transferkit.cli.predict import predict
from transferkit.cli.rank import rank
from transferkit.cli.serve import serve
from transferkit.cli.train import train
from transferkit.cli.tune import tune
from transferkit.errors import FRONT_END, TransferkitError

app = typer.Typer(name="transferkit", add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False)
for command in (train, adapt, rank, tune, auto, audit, evaluate, predict, compare, backbones, demo, export, serve, report):
    app.command(command.__name__)(command)
app.add_typer(cache_app, name="cache")


def show_version(value: bool) -> None:
    if value:
        print(f"transferkit {__version__}")
        raise typer.Exit()


@app.callback()
def root(ctx: typer.Context,
         version: Annotated[bool, typer.Option("--version", callback=show_version, is_eager=True,
                                               help="Print the version and exit")] = False) -> None:
    """Turn a pretrained model into a model for your data."""
    # messages raised while a command runs name options (--overwrite), not Python arguments (overwrite=True)
    token = FRONT_END.set("cli")
    ctx.call_on_close(lambda: FRONT_END.reset(token))


def main() -> None:
    """The console script: a user error is one line on stderr (exit 2), Ctrl-C exits 130."""
    try:
        code = app(standalone_mode=False)
    except NoArgsIsHelpError as exc:  # a bare `transferkit`: the help it asked for
        print(exc.format_message(), file=sys.stderr)
        sys.exit(2)
    except UsageError as exc:  # a mistyped option or value: one line, like every other user error
        command = exc.ctx.command_path if exc.ctx else "transferkit"
        message = exc.format_message().replace("Value error, ", "")  # typer's coercion prefix says nothing
        print(f"error: {message} (see '{command} --help')", file=sys.stderr)
        sys.exit(2)
    except ClickException as exc:
        print(f"error: {exc.format_message()}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except TransferkitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except OSError as exc:  # a full disk or a folder without permission, met where no check could foresee it
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{exc.strerror or exc}", file=sys.stderr)
        sys.exit(2)
    except (KeyboardInterrupt, typer.Abort):  # typer.Abort: Ctrl-C at one of its prompts
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) and not isinstance(code, bool) else 0)  # typer.Exit(code) gives a code


if __name__ == "__main__":
    main()
