"""Supervision: the plan of TEI children, the restart policy, and the loop that keeps them running."""
