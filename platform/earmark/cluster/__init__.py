"""Jobs on a Ray cluster: the Jobs API client (`earmark submit`, `earmark jobs`) and the
entrypoint a submitted job runs (`python -m earmark.cluster.jobmain`)."""
