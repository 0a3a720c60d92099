"""The `tf-unilth` command: one absl program per subcommand."""
