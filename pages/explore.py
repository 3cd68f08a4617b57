import streamlit as st

st.title("Explore")
st.info("This page is not built yet.", icon=":material/construction:")
