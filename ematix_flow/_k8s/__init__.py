"""The Kubernetes side of ematix-flow, as pure data and pure functions.

* :mod:`~ematix_flow._k8s.model` — the ``EmatixPipeline`` resource (spec and status) as
  pydantic models: the single source of truth for the CRD schema.
* :mod:`~ematix_flow._k8s.crd` — the CustomResourceDefinition built from the model;
  ``python -m ematix_flow._k8s.crd`` regenerates ``crds/``.
* :mod:`~ematix_flow._k8s.cronjob` — resource → CronJob manifest (called by the operator).
* :mod:`~ematix_flow._k8s.export` — registered pipelines → EmatixPipeline manifests
  (``flow export-k8s``).
* :mod:`~ematix_flow._k8s.summary` — the JSON run summary a pod leaves in its
  termination message, and its parser (read back by the operator).

Nothing here talks to a cluster; the operator (``operator/ematix_flow_operator``) does.
"""
