"""Datasets: the real dSprites / Shapes3D files, their procedural stand-ins, splits, batches.

Sources
-------
``load_dataset(name, source)`` returns a :class:`Dataset` whose ``source`` is ``"real"``
(the official file under the data root) or ``"procedural"`` (rendered by
:mod:`vaesae.data.render` with exactly the official factor grid, order and image format).
``source="auto"`` takes the real file when it is present and verifies, and the procedural
stand-in when the file is absent; a file that is present but fails verification is an error,
never a silent fallback.

Data root: ``$VAESAE_DATA`` if set, else ``<repo>/data/``. Real files keep their official
names (``dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz``, ``3dshapes.h5``) and each has its
SHA-256 beside it in ``<file>.sha256`` (``sha256sum`` format), written by ``download`` (or by
``verify --record`` for a file copied in by hand, after its structure has been validated).

Download. ``download`` fetches the official address with pooch (``pooch.retrieve``, HTTPS only,
no progress bar unless asked) into a hidden staging folder of the data root, where pooch checks
the file against its published hash (``DatasetSpec.known_hash``: the MD5 that public loaders of
these files check) and removes it when it does not match; the file is then validated and renamed
into place, and the staging folder is removed whatever happens. Nothing touches the network
unless ``download`` is called: loading never downloads.

Checksum cache. Every load checks the file's SHA-256 against ``<file>.sha256``. Hashing the
Shapes3D file (whose images decode to 5.9 GB) takes a while, so after a successful check the data root also gets
``.<file>.verified.json`` holding ``(size, mtime_ns, sha256)``; a later load whose file still
has that size and mtime_ns and whose record still names that SHA-256 skips re-hashing. Any
write to the file changes its mtime_ns, so this only misses a deliberate in-place edit that
restores the old mtime; ``python -m vaesae.data verify NAME`` always re-hashes.

Reading. Real files are opened with ``allow_pickle=False`` (the dSprites ``metadata`` array is
a pickle and is never read) and validated: array names, shapes and dtypes, the factor classes /
labels against the official value grids and C order. dSprites images are decoded on first use
and kept bit-packed in memory (377 MB instead of 3 GB). Shapes3D images are read lazily from the
HDF5 file with sorted-index reads; nothing reads all 5.9 GB into memory unless asked to.

Factors are int64 class indices, C order (last factor fastest): index = sum(class_i * stride_i).
dSprites drops its constant colour column (K=5); Shapes3D has K=6.

Split. ``Dataset.split(seed=0)`` is a seeded random permutation of all indices (dSprites 80/20,
Shapes3D 400,000/80,000), independent of any training seed. ``eval_indices`` draws the fixed
evaluation set (10,000 images, seed ``EVAL_SEED`` = 2024) from the validation part.

Batches. :class:`BatchIterator` keeps the training split on the training device as uint8.
Real data: the split's images are materialised on the device once (dSprites 2.4 GB,
Shapes3D 4.9 GB). Procedural data: on a CUDA device with room for it (at most half the free
memory) the split is rendered there once, as for real data (measured on an H100: 0.2 s; per
256-image batch 0.07 ms instead of 1.2 ms dSprites / 6.6 ms Shapes3D when rendering per batch);
otherwise (CPU, or too little memory) only the factor rows live on the device and each batch is
rendered when it is drawn. The renderer is deterministic, so both give the same pixels;
``materialize=True/False`` forces either. The order of an epoch is a
permutation drawn on the CPU by a ``torch.Generator`` seeded from (seed, epoch) only, so it is
the same on every device and training can resume at any epoch boundary.

Command line::

    python -m vaesae.data download NAME [--root DIR] [--force] [--progress]
    python -m vaesae.data verify NAME [--root DIR] [--record]
    python -m vaesae.data info NAME [--root DIR] [--source auto|real|procedural]

Modules
-------
Datasets: specifications, the real files (checksums, readers), their download, the procedural stand-ins and the
loader with its splits and batches. ``python -m vaesae.data`` is the command line (:mod:`vaesae.data.cli`).

specs     the two datasets' factor grids and file layouts (:data:`~vaesae.data.specs.SPECS`), names
files     the data root, SHA-256 records and the checksum cache, the validated readers of the real files
download  fetching the official files with pooch
render    the procedural, deterministic stand-ins (``python -m vaesae.data.render`` compares them with real samples)
loader    :class:`~vaesae.data.loader.Dataset`, :func:`~vaesae.data.loader.load_dataset`, the evaluation subset,
          :func:`~vaesae.data.loader.to_float` and :class:`~vaesae.data.loader.BatchIterator`
cli       ``download``, ``verify``, ``info``

Layer: the lowest subpackage, on the base modules (``config``, ``runs``, ``errors``, ``io``, ``cliargs``).
"""
