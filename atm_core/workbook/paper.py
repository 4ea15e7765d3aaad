"""The paper's published numbers on real data; quoted next to the benchmark, never measured here."""
import pandas as pd

# Top-1 of ATM(mul, sub): the paper's headline results (EVA02-CLIP-L/14) and the reference code's
# own test logs for CLIP ViT-B/16 on Something-Something V1 (2 clips x 3 crops).
PAPER_RESULTS = pd.DataFrame([
    {"dataset": "Something-Something V1", "backbone": "EVA02-CLIP-L/14", "frames": 16, "top1": 65.6},
    {"dataset": "Something-Something V2", "backbone": "EVA02-CLIP-L/14", "frames": 16, "top1": 74.6},
    {"dataset": "Kinetics-400", "backbone": "EVA02-CLIP-L/14", "frames": 8, "top1": 89.4},
    {"dataset": "Something-Something V1", "backbone": "CLIP ViT-B/16", "frames": 8, "top1": 58.744},
    {"dataset": "Something-Something V1", "backbone": "CLIP ViT-B/16", "frames": 16, "top1": 60.609},
    {"dataset": "Something-Something V1", "backbone": "CLIP ViT-B/16", "frames": 32, "top1": 61.450},
])
