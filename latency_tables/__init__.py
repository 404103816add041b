"""Latency of architectures on a target: targets, SQLAlchemy tables of measured blocks, lookup and estimation.

Knows specs and how to build them (search_spaces), never the search. Built by the latency-table issue.
"""
