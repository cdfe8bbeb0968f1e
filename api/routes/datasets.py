"""Routes for data dictionaries: an agency registers its datasets, researchers browse them."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path

from api.auth import Caller
from api.errors import errors
from api.schemas.extract import DatasetIn, DatasetOut, DatasetsOut, DictionaryEntryOut, SignOffIn
from api.state import ExtractsDep

router = APIRouter(prefix="/v1/datasets", tags=["extracts"])
Name = Annotated[str, Path(min_length=1, max_length=64)]


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


@router.post(
    "/{agency}/{dataset}/attributes/{attribute}/sign-off", response_model=DictionaryEntryOut,
    response_model_by_alias=True,
    summary="A steward signs an attribute off as non-identifying",
    description="Takes an `other` attribute out of the quasi-identifiers of rows extracts "
    "(Decision 94). Steward only, with a `reason`; the principal must carry a `human_email`. "
    "Refused (422, field `attribute`) for dates, ZIPs, ages and birth fields and for any class "
    "but `other`. Kept across the agency's re-PUTs of its dictionary while the attribute keeps "
    "its type and class. Requests made before it do not gain it. Audited "
    "(`datasets.sign_off`).", responses=errors(403, 404, 422))
def sign_off(agency: Name, dataset: Name, attribute: Name, body: SignOffIn, caller: Caller,
             extracts: ExtractsDep) -> Any:
    """Sign one attribute off."""
    return extracts.sign_off(caller, agency, dataset, attribute, reason=body.reason)


@router.post(
    "/{agency}/{dataset}/attributes/{attribute}/sign-off/revoke",
    response_model=DictionaryEntryOut, response_model_by_alias=True,
    summary="A steward withdraws an attribute's non-identifying sign-off",
    description="The attribute is a quasi-identifier again from now on, also in the builds of "
    "requests approved before. Steward only, with a `reason`; 404 when it is not signed off. "
    "Audited (`datasets.sign_off_revoke`).", responses=errors(403, 404, 422))
def revoke_sign_off(agency: Name, dataset: Name, attribute: Name, body: SignOffIn,
                    caller: Caller, extracts: ExtractsDep) -> Any:
    """Withdraw one attribute's sign-off."""
    return extracts.revoke_sign_off(caller, agency, dataset, attribute, reason=body.reason)
