"""The Controller inside training frameworks: PyTorch Lightning (`lhopt_cli.integrations.lightning`,
extra `lhopt-cli[lightning]`) and Hugging Face transformers' Trainer (`lhopt_cli.integrations.hf`,
extra `lhopt-cli[hf]`). Each module imports its framework; this package imports neither."""
