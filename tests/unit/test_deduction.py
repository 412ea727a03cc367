from datetime import UTC, datetime, timedelta
from uuid import uuid4

from hypothesis import given
from hypothesis import strategies as st

from pipeline.core.alerts import AlertKind, crossings
from pipeline.core.deduction import Source, Wallet, spending_order

NOW = datetime(2026, 6, 1, tzinfo=UTC)


def src(amount, expires_in_days=None, age_days=0):
    expires = NOW + timedelta(days=expires_in_days) if expires_in_days is not None else None
    return Source(uuid4(), amount, expires, NOW - timedelta(days=age_days))


def test_soonest_expiring_first_then_no_expiry_oldest_first():
    never_old = src(10, None, age_days=9)
    never_new = src(10, None, age_days=1)
    soon = src(10, 2)
    later = src(10, 30)
    expired = src(10, -1)
    empty = src(0, 1)
    order = spending_order([never_new, later, expired, soon, never_old, empty], NOW)
    assert order == [soon, later, never_old, never_new]


def test_take_spans_sources_and_overdraws_the_rest():
    a, b = src(5, 1), src(7, None)
    wallet = Wallet([b, a], NOW)
    assert wallet.take(20) == 8
    assert wallet.changed == {a.id: 0, b.id: 0}


sources_st = st.lists(
    st.builds(
        src,
        st.integers(0, 1000),
        st.one_of(st.none(), st.integers(-10, 60)),
        st.integers(0, 100),
    ),
    max_size=8,
)


@given(sources_st, st.integers(0, 5000))
def test_takes_never_exceed_sources_or_touch_expired_ones(sources, credits):
    wallet = Wallet(sources, NOW)
    overdraft = wallet.take(credits)
    by_id = {s.id: s for s in sources}
    taken = {i: by_id[i].amount - left for i, left in wallet.changed.items()}
    assert sum(taken.values()) + overdraft == credits
    for source_id, credits_taken in taken.items():
        source = by_id[source_id]
        assert 0 < credits_taken <= source.amount and wallet.changed[source_id] >= 0
        assert source.expires_at is None or source.expires_at > NOW
    usable = sum(s.amount for s in sources if s.usable(NOW))
    assert overdraft == max(0, credits - usable)


def test_crossings_fire_once_per_mark():
    assert crossings(1500, 900, 1000) == [AlertKind.LOW_BALANCE]
    assert crossings(900, 800, 1000) == []
    assert crossings(900, 0, 1000) == [AlertKind.EXHAUSTED]
    assert crossings(1500, -5, 1000) == [AlertKind.LOW_BALANCE, AlertKind.EXHAUSTED]
    assert crossings(-5, -10, 1000) == []


def test_a_wallet_spends_on_across_takes_and_records_the_new_amounts():
    a, b = src(5, 1), src(7, None)
    wallet = Wallet([b, a], NOW)
    assert wallet.take(4) == 0 and wallet.changed == {a.id: 1}
    assert wallet.take(4) == 0 and wallet.changed == {a.id: 0, b.id: 4}
    assert wallet.take(10) == 6 and wallet.changed == {a.id: 0, b.id: 0}
