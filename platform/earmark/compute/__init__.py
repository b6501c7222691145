"""Ray resources as plain data → Ray options, and the checks that a plan fits the cluster
(totals and node by node), shared by the batch job and Serve; connecting to a cluster."""
