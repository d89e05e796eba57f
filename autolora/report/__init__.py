"""Looking at a study where users already look: the HTML report, optuna-dashboard and the MLflow Model Registry."""
