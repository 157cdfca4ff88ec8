"""What each `colorray` subcommand does, one module per command: `run(args)` with the
arguments colorray.cli parses. A DVC stage's script (pipeline/<stage>.py) imports its
command's module, so the stage's code dependencies are that module's imports."""
