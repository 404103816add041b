"""The ground floor: facts every floor above shares, with no heavy import (no torch, no Optuna).

`errors` (the base of every error a user sees as one line), `dtypes` (the precisions the project names),
`files` (atomic writes), `sqlite` (how every SQLite file is opened), `lazy` (packages whose names import on first
use, so the command line answers `--help` without loading torch).
"""
