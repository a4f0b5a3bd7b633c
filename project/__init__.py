"""Where the repository keeps things, and small helpers every tool shares (not in the .mar).

- `project.paths`: the repository root and the default folders (artifacts, model store, run
  directory, results), each overridable by one environment variable;
- `project.ports`: free and busy localhost TCP ports.
"""
