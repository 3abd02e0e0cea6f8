"""``/api/users``: user management (admins only).

Every answer shows the user's limits and, when they have a token budget, what
is left of it this period (all of the user's calls count).
"""

from __future__ import annotations

from aiohttp import web
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from controller import appkeys
from controller.api._limits import current_usage, limits_of, set_limits, user_budgets
from controller.api._revoke import delete_granting_row
from controller.auth import hash_password, identity_of
from controller.http import Endpoint, json_response, parse_body, path_id
from controller.schemas import UserCreate, UserList, UserOut, UserUpdate
from controller.store import LoginToken, User, commit_or_conflict
from controller.store.timeutil import utcnow
from shared.errors import Conflict, NotFound


async def user_outs(request: web.Request, session: AsyncSession, rows: list[User]) -> list[UserOut]:
    await current_usage(request)
    budgets = await user_budgets(session, rows, utcnow())
    return [
        UserOut(
            id=row.id,
            username=row.username,
            email=row.email,
            is_admin=row.is_admin,
            limits=limits_of(row),
            budget=budgets.get(row.id),
            created_at=row.created_at,
        )
        for row in rows
    ]


async def user_out(request: web.Request, session: AsyncSession, row: User) -> UserOut:
    [out] = await user_outs(request, session, [row])
    return out


async def _get(session: AsyncSession, user_id: str) -> User:
    row = await session.get(User, user_id)
    if row is None:
        raise NotFound(f"User '{user_id}' not found")
    return row


async def _ensure_unique(
    session: AsyncSession, username: str | None, email: str | None, exclude: str | None = None
) -> None:
    if username is not None:
        taken = await session.scalar(select(User.id).where(User.username == username))
        if taken and taken != exclude:
            raise Conflict(f"Username '{username}' is already taken")
    if email is not None:
        taken = await session.scalar(select(User.id).where(User.email == email))
        if taken and taken != exclude:
            raise Conflict(f"Email '{email}' is already in use")


async def list_users(request: web.Request) -> web.Response:
    async with request.app[appkeys.DATABASE].session() as session:
        rows = list(await session.scalars(select(User).order_by(User.created_at, User.id)))
        return json_response(UserList(items=await user_outs(request, session, rows)))


async def get_user(request: web.Request) -> web.Response:
    user_id = path_id(request, "user_id", "User")
    async with request.app[appkeys.DATABASE].session() as session:
        return json_response(await user_out(request, session, await _get(session, user_id)))


async def create_user(request: web.Request) -> web.Response:
    body = await parse_body(request, UserCreate)
    rounds = request.app[appkeys.SETTINGS].bcrypt_rounds
    async with request.app[appkeys.DATABASE].session() as session:
        await _ensure_unique(session, body.username, body.email)
        row = User(
            username=body.username,
            email=body.email,
            is_admin=body.is_admin,
            password_hash=await hash_password(body.password, rounds),
        )
        set_limits(row, body.limits)
        session.add(row)
        await commit_or_conflict(session, "Username or email already in use")
        return json_response(await user_out(request, session, row), 201)


async def update_user(request: web.Request) -> web.Response:
    user_id = path_id(request, "user_id", "User")
    body = await parse_body(request, UserUpdate)
    given = body.model_fields_set
    async with request.app[appkeys.DATABASE].session() as session:
        row = await _get(session, user_id)
        if "email" in given:
            await _ensure_unique(session, None, body.email, exclude=row.id)
            row.email = body.email
        if "is_admin" in given and body.is_admin is not None:
            if row.is_admin and not body.is_admin and await _admin_count(session) <= 1:
                raise Conflict("Cannot remove admin rights from the last admin")
            row.is_admin = body.is_admin
        if "password" in given and body.password is not None:
            rounds = request.app[appkeys.SETTINGS].bcrypt_rounds
            row.password_hash = await hash_password(body.password, rounds)
            # A new password signs the user out everywhere else.
            await session.execute(delete(LoginToken).where(LoginToken.user_id == row.id))
        if "limits" in given:
            set_limits(row, body.limits)
        await commit_or_conflict(session, "Email already in use")
        # Cached identities carry the user's role and limits: they change now.
        request.app[appkeys.AUTH].invalidate()
        return json_response(await user_out(request, session, row))


async def _admin_count(session: AsyncSession) -> int:
    return await session.scalar(select(func.count(User.id)).where(User.is_admin)) or 0


async def delete_user(request: web.Request) -> web.Response:
    identity = identity_of(request)
    user_id = path_id(request, "user_id", "User")
    if user_id == identity.user_id:
        raise Conflict("You cannot delete your own account")
    return await delete_granting_row(request, lambda session: _get(session, user_id))


ENDPOINTS = [
    Endpoint(
        "GET",
        "/api/users",
        list_users,
        "List users",
        "users",
        access="admin",
        responses={200: UserList},
    ),
    Endpoint(
        "POST",
        "/api/users",
        create_user,
        "Create a user",
        "users",
        access="admin",
        body=UserCreate,
        responses={201: UserOut},
        errors=(409, 422),
    ),
    Endpoint(
        "GET",
        "/api/users/{user_id}",
        get_user,
        "Get a user",
        "users",
        access="admin",
        responses={200: UserOut},
        errors=(404,),
    ),
    Endpoint(
        "PATCH",
        "/api/users/{user_id}",
        update_user,
        "Update a user's email, password, role or limits",
        "users",
        access="admin",
        body=UserUpdate,
        responses={200: UserOut},
        errors=(404, 409, 422),
    ),
    Endpoint(
        "DELETE",
        "/api/users/{user_id}",
        delete_user,
        "Delete a user (and their keys)",
        "users",
        access="admin",
        responses={204: None},
        errors=(404, 409),
    ),
]
