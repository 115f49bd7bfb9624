"""The tenant-scoped repository base: every tenant query starts from its one scoped statement."""

from __future__ import annotations

from typing import Any, ClassVar, Generic, TypeVar

from sqlmodel import Session, SQLModel, select
from sqlmodel.sql.expression import SelectOfScalar

ModelT = TypeVar("ModelT", bound=SQLModel)


class TenantRepository(Generic[ModelT]):
    """SQL for one tenant's rows of one table; another tenant's ids behave as if absent."""

    model: ClassVar[type[Any]]

    def __init__(self, session: Session, tenant_id: str) -> None:
        self.session = session
        self.tenant_id = tenant_id

    def base_statement(self) -> SelectOfScalar[ModelT]:
        """SELECT of this tenant's rows; every read builds on it."""
        statement: SelectOfScalar[ModelT] = select(self.model).where(self.model.tenant_id == self.tenant_id)
        return statement

    def get(self, row_id: str, *, for_update: bool = False) -> ModelT | None:
        """The row with this id if it belongs to this tenant."""
        statement = self.base_statement().where(self.model.id == row_id)
        if for_update:
            statement = statement.with_for_update()
        return self.session.exec(statement).first()

    def stage(self, row: ModelT) -> ModelT:
        """Add a new row of this tenant's to the session (written at the next flush)."""
        if getattr(row, "tenant_id", None) != self.tenant_id:
            raise ValueError("row belongs to another tenant")
        self.session.add(row)
        return row
