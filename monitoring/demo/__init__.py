"""`make drift-demo`: the whole monitoring loop on simulated production, end to end, for real.

A sandbox (`runs/drift-demo/`: its own git+DVC repository, MLflow store, Prefect server, prediction
log and reports) is built from params.yaml; the Prefect `training` flow trains the first
champion; the prediction API serves it; weeks of production that continue the training data's
population (`fraud.continuation`) go through `POST /predict/batch`, with a drift regime from a
known day (`fraud.regimes`) and fraud labels sent back through `POST /feedback` with a delay;
the `monitoring` flow checks each day; when it triggers retraining, the `retraining/production`
deployment (served by `python -m pipelines.deploy`) runs on the production data, its gate
decides, and the API picks up a new champion by its alias poll. The timeline, a picture of it
and the average precision of the old and the new champion on the drifted days are written
beside the reports.

Modules: `config` (the demo's settings), `sandbox` (the directory and its environment),
`services` (the Prefect server, the deployment's worker and the API, as subprocesses),
`traffic` (production simulated, sent, labelled), `retraining` (waiting for a flow run and
reading the gate's decision), `evaluation` (old and new champion on the same transactions),
`timeline` (rows, table, picture), `runner` (the loop), `cli` (`python -m monitoring.demo`).

Monitoring imports `fraud` only, and so does the demo: the API, the training and the retraining
run as processes and flow runs, never as imports.
"""
