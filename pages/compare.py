import streamlit as st

st.title("Compare")
st.info("This page is not built yet.", icon=":material/construction:")
