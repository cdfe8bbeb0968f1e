"""Routes for data dictionaries: an agency registers its datasets, researchers browse them."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path

from api.auth import Caller
from api.errors import errors
from api.schemas.extract import DatasetIn, DatasetOut, DatasetsOut
from api.state import ExtractsDep

router = APIRouter(prefix="/v1/datasets", tags=["extracts"])


@router.put(
    "/{dataset}", response_model=DatasetOut, response_model_by_alias=True,
    summary="Register or replace the caller agency's data dictionary for a dataset",
    description="Each entry names one record attribute (as the agency sends it in `attributes`): "
    "type, description, class (`quasi_identifier`, `sensitive`, `other`), the generalizations "
    "it may be released under and the default one. The whole dictionary is replaced. Only "
    "attributes with an entry can ever be released. Invalid entries give a 422 naming each "
    "entry (`row`, 1-based), field and reason; nothing is stored. Audited (`datasets.put`).",
    responses=errors(422))
def put_dataset(dataset: Annotated[str, Path(min_length=1, max_length=64)], body: DatasetIn,
                caller: Caller, extracts: ExtractsDep) -> Any:
    """Replace one dataset dictionary."""
    attributes = [a.model_dump(by_alias=True) for a in body.attributes]
    return extracts.put_dataset(caller, dataset, description=body.description,
                                attributes=attributes)


@router.get(
    "", response_model=DatasetsOut, response_model_by_alias=True,
    summary="The catalogue of dataset dictionaries",
    description="Every agency's datasets and their attribute entries: what researchers may "
    "request, and under which generalizations. Describes attributes; holds no values.")
def list_datasets(caller: Caller, extracts: ExtractsDep) -> Any:
    """List every dataset dictionary."""
    return extracts.list_datasets(caller)
