"""``evalkit compare``: several systems on one question set, scored the same way, with paired statistics."""
