"""Configuration (pure): every variable declared once, parsed and validated into Settings."""
