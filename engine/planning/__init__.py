"""Surgical planning: Couinaud segments and hemilivers, lesion location and vessel distances, virtual
resections and the future liver remnant (FLR). No Qt; see README "Planning"."""
