"""Avatar Forge's common package: what every service shares, written once."""
