# Sourced on the GPU machine by start.sh and bench.sh (needs $run, the study's folder, and $commit): the variables every
# process of a study there runs with. JUPYTER_PATH: the wheels' data files (nbconvert's templates, ipykernel's kernel
# spec) lie in /tmp/site/share/jupyter, where start.sh installed .whl; VAESAE_GIT_COMMIT: the tree there has no .git,
# so every record names the commit start.sh was given.
export JUPYTER_PATH=/tmp/site/share/jupyter PYTHONPATH=/tmp/site:$run/lib PYTHONUNBUFFERED=1 MPLBACKEND=Agg VAESAE_GIT_COMMIT=$commit
