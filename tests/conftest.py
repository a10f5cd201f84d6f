import os

# Tests run on 2 shared cores: one torch thread avoids OpenMP spin-waiting against other processes.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
