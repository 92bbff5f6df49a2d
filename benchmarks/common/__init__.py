"""What every benchmark shares: the project it measures (`project`), the machine it runs on and
who used its CPUs (`machine`), and how results are reported (`report`)."""
