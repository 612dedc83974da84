"""The model: request-time features, the preprocessor, the release (fitted pair + fingerprint), its MLflow
packaging, training, metrics and behavioural checks. Stages, serving and monitoring share it."""
