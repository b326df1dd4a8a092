"""File input and output: the only place where geometry is converted between SimpleITK and numpy."""
