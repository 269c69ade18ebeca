"""Root-side node state: ledger, job files, node context, executor, reconcile, status."""
