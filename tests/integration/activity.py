"""Realistic Library traffic for projection tests: every event type, through the commands."""

from __future__ import annotations

from uuid import UUID, uuid4

from domain import commands as c
from domain.library import Library
from domain.reader import reader_id_for


def reader(library: Library, name: str) -> UUID:
    rid = reader_id_for(f"activity-{name}-{uuid4()}")
    library.handle(c.RegisterReader(reader_id=rid, nickname=name))
    return rid


def story(library: Library, tag: str = "story") -> c.Recorded:
    """Two readers, three books, and loans through every transition (about 25 events).
    Returns the last command's ``Recorded``."""
    owner, borrower = reader(library, f"{tag}-owner"), reader(library, f"{tag}-borrower")
    library.handle(
        c.ChangeProfile(
            reader_id=borrower, nickname=f"{tag}-借书人", avatar_url="https://img/a.png"
        )
    )
    books = []
    for i, isbn in enumerate(("9787536692930", "9787020002207", "9780140449136")):
        book_id = uuid4()
        library.handle(
            c.PublishBook(
                book_id=book_id,
                owner_id=owner,
                isbn=isbn,
                title=f"{tag} 书 {i}",
                author="作者",
                tags=["t", tag],
            )
        )
        books.append(book_id)
    library.handle(c.ReviseBook(book_id=books[0], actor_id=owner, summary="修订", tags=["新"]))
    lent = uuid4()
    library.handle(
        c.RequestLoan(
            loan_id=lent,
            book_id=books[0],
            borrower_id=borrower,
            note="想读",
            contact=c.Contact(phone="13800000000"),
        )
    )
    library.handle(c.ApproveLoan(loan_id=lent, actor_id=owner))
    library.handle(c.StartReturn(loan_id=lent, actor_id=borrower))
    library.handle(c.ConfirmReturn(loan_id=lent, actor_id=owner))
    declined, cancelled = uuid4(), uuid4()
    library.handle(c.RequestLoan(loan_id=declined, book_id=books[1], borrower_id=borrower))
    library.handle(c.DeclineLoan(loan_id=declined, actor_id=owner, reason="在读"))
    library.handle(
        c.RequestLoan(
            loan_id=cancelled,
            book_id=books[1],
            borrower_id=borrower,
            contact=c.Contact(wechat_id="wx-borrower"),
        )
    )
    library.handle(c.CancelLoan(loan_id=cancelled, actor_id=borrower))
    library.handle(c.WithdrawBook(book_id=books[2], actor_id=owner))
    library.handle(c.RelistBook(book_id=books[2], actor_id=owner))
    on_loan = uuid4()
    library.handle(c.RequestLoan(loan_id=on_loan, book_id=books[2], borrower_id=borrower))
    return library.handle(c.ApproveLoan(loan_id=on_loan, actor_id=owner))
