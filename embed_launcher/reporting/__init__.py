"""Reporting: the one output sink (console) and the one error funnel (errors, funnel)."""
