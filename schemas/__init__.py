"""Record definitions: the article row and the dead-letter row, each declared once."""
