"""Search orchestration (Optuna + Ray), accuracy proxies, data loading, export and dashboard.

Composes the floors below it: latency_tables -> search_spaces -> kernels. Modules: `config` (what a search is
asked to do), `search` (the driver), `evaluate` (one trial on a worker), `study` (the Optuna study and its
records), `export` (timm backbones), `dashboard`, `proxies`, `data`.
"""
