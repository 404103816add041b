"""Search orchestration (Optuna + Ray), accuracy proxies, data loading, export and dashboard.

Composes the floors below it: latency_tables -> search_spaces -> kernels. Built by the search issues.
"""
