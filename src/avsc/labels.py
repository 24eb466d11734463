"""The ten scene labels of TAU Urban Audio-Visual Scenes 2021, as spelled in its metadata.

Alphabetical order is the convention for probability columns everywhere in avsc
(model outputs, Parquet embeddings, the DCASE submission CSV).
"""

LABELS: tuple[str, ...] = (
    "airport",
    "bus",
    "metro",
    "metro_station",
    "park",
    "public_square",
    "shopping_mall",
    "street_pedestrian",
    "street_traffic",
    "tram",
)

LABEL_INDEX: dict[str, int] = {label: i for i, label in enumerate(LABELS)}

# The ten development cities, as spelled in file stems (``<scene>-<city>-<location>-<segment>``).
CITIES: tuple[str, ...] = (
    "amsterdam",
    "barcelona",
    "helsinki",
    "lisbon",
    "london",
    "lyon",
    "milan",
    "paris",
    "prague",
    "vienna",
)
