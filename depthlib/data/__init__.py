"""Data: NYU Depth V2 readers, folder exports, the procedural rooms set and paired transforms."""
