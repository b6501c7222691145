"""`python -m earmark.cluster`: the entrypoint of jobs submitted by earlier versions."""

from earmark.cluster.run import main

main()
