"""The `slurm-mig` command: thin click verbs over the library, which never
imports this package. Heavy modules are imported inside the verbs that need
them. The admin CLI's one error mapping is `run`: 0 ok, 1 node or other
error, 2 bad input, 3 the request does not fit."""
from __future__ import annotations

import sys

import click

from ..errors import SlurmMigError
from . import catalog, doctor, free, gres, hooks, layout, node, sim, status  # noqa: F401  (register the verbs)
from .app import main


def run() -> None:
    try:
        rc = main(standalone_mode=False)
        sys.exit(rc if isinstance(rc, int) else 0)
    except click.ClickException as e:
        e.show()
        sys.exit(2)
    except click.exceptions.Abort:
        sys.exit(1)
    except SlurmMigError as e:
        click.echo(f"slurm-mig: error: {e}", err=True)
        sys.exit(e.exit_code)
    except BrokenPipeError:
        sys.exit(1)
    except OSError as e:           # one line naming the path and the cause, no traceback
        from ..fsutil import os_problem
        click.echo(f"slurm-mig: error: {os_problem(e.filename or '?', e, 'use')}", err=True)
        sys.exit(1)
    except Exception as e:
        from ..nvml.errors import NVMLError, describe
        if not isinstance(e, NVMLError):
            raise
        click.echo(f"slurm-mig: error: NVML: {describe(e)}", err=True)
        sys.exit(1)
