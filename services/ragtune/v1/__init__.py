"""Generated from protos/ragtune/v1 by `make protos`; do not edit."""
