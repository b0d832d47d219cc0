"""``python -m deejai.plugins.tray``: the same as ``deejai tray``."""
from __future__ import annotations

import sys

from deejai.plugins.tray.cli import tray


def main(argv: list[str] | None = None) -> int:
    """Run ``deejai tray`` with deejai's error handling (one line, the error's exit code)."""
    import logging
    import os

    import click
    from deejai.engine.errors import DeejaiError

    debug = os.environ.get("DEEJAI_DEBUG", "") not in ("", "0")
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        tray.main(args=argv, prog_name="deejai tray", standalone_mode=False)
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.exceptions.Abort:
        return 130
    except DeejaiError as exc:
        if debug:
            raise
        click.echo(f"deejai: error: {exc}", err=True)
        return exc.exit_code
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
