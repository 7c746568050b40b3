"""Raw interaction logs -> prepared, period-cut event logs; synthetic streams."""
