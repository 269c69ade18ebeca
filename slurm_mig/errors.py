"""Exceptions that map onto the CLI's exit codes: 0 ok, 1 node/other, 2 bad input, 3 no fit."""


class SlurmMigError(Exception):
    """Base class; `exit_code` is what the CLI returns for it."""

    exit_code = 1


class BadInput(SlurmMigError):
    """A malformed or unknown value from a user or a job (exit 2)."""

    exit_code = 2


class NoFit(SlurmMigError):
    """The request cannot be placed on this node now (exit 3)."""

    exit_code = 3


class NeverFits(NoFit):
    """The request cannot fit even on an empty GPU of this model: waiting is pointless."""


class NodeProblem(SlurmMigError):
    """The node itself is unusable: NVML broken, MIG mode stuck (exit 1)."""

    exit_code = 1


class StateCorrupt(SlurmMigError):
    """A state or ledger file cannot be parsed; the message names the file."""

    exit_code = 1


class SlurmUnavailable(SlurmMigError):
    """Slurm could not be asked (client missing, controller down or hung)."""

    exit_code = 1
